"""Whole drives: built from checked content, opened from an image, a directory or a disk,
checked as a whole, and extracted."""
