package main

func cmdResume(e *env, args []string) int { return pauseResume(e, "resume", args) }
