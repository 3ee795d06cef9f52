package main

import pid1 "tandem.dev/tandem/init"

// runPID1 hands over to the init library; it never returns.
func runPID1() { pid1.Main() }
