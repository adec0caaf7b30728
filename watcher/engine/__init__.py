"""The watch engine: schedules in Redis, leased claims, polls, exactly-once transitions."""
