"""Where jobs run: `local` (this server process) now; the gateway backend forwards them to a GPU host."""
