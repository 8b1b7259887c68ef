"""The study: classifier arms, their training (banks) and scoring, the statistics and the report."""
