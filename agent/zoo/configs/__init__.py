"""Package data: the public config.json of each zoo entry and their index (a package so wheels ship it)."""
