"""Example sweep plans shipped with the engine (TOML files; `ctxscope agent run PLAN`)."""
