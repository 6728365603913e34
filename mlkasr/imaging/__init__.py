"""Image files and pixel operations shared by every stage: I/O and the project's one resize."""
