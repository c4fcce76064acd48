"""A clean reimplementation of the Parameter Golf reference stack (see issue: reference_model)."""
