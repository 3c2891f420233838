// Package lua holds the Redis scripts of the engine, one typed wrapper per
// script, the builders of every key they touch (Keys), and the typed readers
// of every hash and record they write. It is the only package that knows
// how data is laid out in Redis: field names and value forms are in
// layout.go, next to the typed readers and decoders callers use instead of
// reading fields or splitting values themselves.
//
// # Scripts
//
// Each script registers itself once (register) from its .lua file (a stock
// script is stock_lib.lua followed by its own file); Preload loads every
// registered script. Each .lua file opens with a header listing its KEYS,
// ARGV and replies.
//
// # Replies
//
// Every script answers an array whose first element is an integer code,
// followed by the payload that code carries:
//
//   - 0 is the script's plain outcome: done, granted, noted (a load script's
//     0 is "fresh": nothing needed doing). The load scripts also answer 1
//     loaded and 2 verified.
//   - -1: the object's state is not in Redis; -2: it was loaded under
//     another dataset epoch (or the epoch key is missing): verify it from
//     MySQL and run again; -3: the epoch moved while MySQL was read.
//   - A positive code is a refusal or outcome of the script's own, named in
//     Go by the wrapper's constants (GrabCode, CloseCode, StockCode).
//   - Amounts and times in a payload are integer strings (Lua numbers are
//     doubles); counts and seqs are integers.
//   - A caller's mistake (an unknown op) is an error reply, never a code.
//
// A wrapper checks the code and the payload's shape and answers
// ErrUnexpectedReply for anything else.
package lua
