package storetest

import "syscall"

// procAttr makes a server the test starts die with the test process, even
// when the test binary is killed (a -timeout panic) before its cleanups run.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
