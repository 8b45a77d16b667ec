// Copyright 2009 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

// Package jpegscale is a JPEG decoder that can decode at 1/2, 1/4 or 1/8
// of an image's size (like libjpeg's scale_denom), which is several times
// cheaper than decoding at full size and downscaling afterwards.
//
// It is a fork of the standard library's image/jpeg decoder (the LICENSE
// file in this directory applies) and accepts exactly what image/jpeg
// accepts: baseline and progressive, grayscale, YCbCr with 4:4:4, 4:4:0,
// 4:2:2, 4:2:0, 4:1:1 and 4:1:0 subsampling, RGB, CMYK and YCbCrK. At
// full size its output is identical to image/jpeg's. The changes are the
// scaled reconstruction (scale.go), a faster entropy decoder for
// sequential scans (block.go: a 64-bit bit reader and wider look-up
// tables, decoding exactly what image/jpeg decodes), shortcuts in the
// inverse DCT for rows, columns and blocks with only a DC term (same
// results), a pixel limit checked before any allocation, and, at 1/8
// scale, skipping progressive AC scans, whose coefficients do not
// contribute.
//
// The decoder handles untrusted input: malformed bytes give an error,
// never a panic, and Options.MaxPixels bounds the memory a small file can
// make it allocate. It does not register itself with package image.
//
// JPEG is defined in ITU-T T.81: https://www.w3.org/Graphics/JPEG/itu-t81.pdf.
package jpegscale
