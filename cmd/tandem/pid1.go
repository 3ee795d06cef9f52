package main

import (
	pid1 "tandem.dev/tandem/init"
	"tandem.dev/tandem/internal/labagent"
)

// runPID1 hands over to the init library; it never returns. The lab
// agent is linked here, not in init/, so that PID 1's own packages never
// import the lab; it runs only on lab boards (board lab_channel).
func runPID1() { pid1.Main(pid1.Options{LabAgent: labagent.Start}) }
