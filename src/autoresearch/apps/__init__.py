"""What people and programs use: the command line, live view, plots, doctor, the local model server."""
