"""Git plumbing: commits built in a private index, worktrees, three-way merges of editable files."""
