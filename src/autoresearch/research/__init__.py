"""The research itself: the coordinator (admission, rebase, decisions), measuring, the scheduler."""
