"""Everything that speaks Voltage's payments API: models, errors, the HTTP client."""
