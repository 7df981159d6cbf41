"""This host's operating system: the private run directory, children that die with their parent."""
