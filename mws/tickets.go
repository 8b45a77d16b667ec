package mws

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"time"
)

// ticketKeys derives TLS session-ticket keys from a cluster secret, one per
// rotation period, so every MWS with the secret encrypts and decrypts the
// same tickets without exchanging keys: a device whose session moved
// resumes TLS on its new MWS with the ticket its old MWS gave it.
type ticketKeys struct {
	secret []byte
	period time.Duration
	now    func() time.Time
}

// key returns the AES-256-GCM AEAD of rotation period n.
func (k *ticketKeys) key(n uint64) (cipher.AEAD, error) {
	var info [8]byte
	binary.BigEndian.PutUint64(info[:], n)
	raw, err := hkdf.Key(sha256.New, k.secret, []byte("imash tls ticket"), string(info[:]), 32)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

func (k *ticketKeys) period0() uint64 { return uint64(k.now().UnixNano() / int64(k.period)) }

// install makes cfg wrap and unwrap its session tickets with the shared
// keys. A ticket stays valid for the current and the two previous periods.
func (k *ticketKeys) install(cfg *tls.Config) {
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		plain, err := ss.Bytes()
		if err != nil {
			return nil, err
		}
		n := k.period0()
		aead, err := k.key(n)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 8+aead.NonceSize(), 8+aead.NonceSize()+len(plain)+aead.Overhead())
		binary.BigEndian.PutUint64(out, n)
		if _, err := rand.Read(out[8:]); err != nil {
			return nil, err
		}
		return aead.Seal(out, out[8:], plain, out[:8]), nil
	}
	cfg.UnwrapSession = func(ticket []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		if len(ticket) < 8 {
			return nil, nil // not ours: a full handshake follows
		}
		n := binary.BigEndian.Uint64(ticket)
		if cur := k.period0(); n > cur || cur-n > 2 {
			return nil, nil
		}
		aead, err := k.key(n)
		if err != nil {
			return nil, err
		}
		if len(ticket) < 8+aead.NonceSize() {
			return nil, nil
		}
		plain, err := aead.Open(nil, ticket[8:8+aead.NonceSize()], ticket[8+aead.NonceSize():], ticket[:8])
		if err != nil {
			return nil, nil
		}
		ss, err := tls.ParseSessionState(plain)
		if err != nil {
			return nil, errors.Join(errors.New("mws: bad session ticket"), err)
		}
		return ss, nil
	}
}
