"""Running one experiment: the process runner, sandbox, cgroups, execution in a folder, slots, backends."""
