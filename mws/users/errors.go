package users

import (
	"errors"
	"fmt"
)

// Errors of Verify, Set and Delete. Verify may return an error matching two
// of them (ErrWrongPassword and ErrInvalidPassword for a known user given an
// empty password); a caller that only distinguishes "let in" from "not"
// checks for nil.
var (
	// ErrUnknownUser: no such user in the file.
	ErrUnknownUser = errors.New("unknown user")
	// ErrWrongPassword: the user exists and the password does not match.
	ErrWrongPassword = errors.New("wrong password")
	// ErrInvalidName: the user name is not 1-64 of [A-Za-z0-9._@-].
	ErrInvalidName = errors.New("invalid user name")
	// ErrInvalidPassword: the password is empty or longer than 72 bytes
	// (bcrypt ignores every byte after the 72nd).
	ErrInvalidPassword = errors.New("invalid password")
	// ErrInvalidCost: a bcrypt cost outside MinCost..MaxCost.
	ErrInvalidCost = errors.New("invalid bcrypt cost")
	// ErrUserExists: "user add" of a user already in the file, without
	// --update.
	ErrUserExists = errors.New("user already exists")
)

// ErrUsage marks errors of the command line itself (unknown subcommand,
// bad or missing flag). A main function maps it to exit status 2.
var ErrUsage = errors.New("usage")

// ParseError is one bad line of a user file.
type ParseError struct {
	File string // the name given to Parse, usually the path
	Line int    // 1-based
	Err  error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("users: %s:%d: %v", e.File, e.Line, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }
