"""Where a study lives and what it holds: storage URLs and opening (storage), the trial and study
attribute schema (record), the winner and best.json (winner), and healing dead workers' trials
(heartbeat)."""
