"""Who may do what, and what they did: the audit log and each API token's request rate
(apps and scoped keys come here next)."""
