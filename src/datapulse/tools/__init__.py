"""Built-in demo tools, resources and prompts (served when no APP is given)."""
