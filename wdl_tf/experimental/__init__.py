"""Experimental prototypes: working code that measures an idea, not a supported product part.

Nothing in `wdl_tf` imports from here; APIs may change or go without notice. Each module
says what it shows and how it is checked.
"""
