"""Speed measurements against reference tools, run by hand (not tests): see each module's docstring."""
