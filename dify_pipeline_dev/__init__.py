"""What develops and demonstrates the package, beside it and not in its wheel: the emulators and the demo."""
