"""What a command does with aligners: align a stack, build a reference without one, compare
methods side by side."""
