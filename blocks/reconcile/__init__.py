"""Rules that act on a day's set of landed files across sources (see `day_complete`)."""
