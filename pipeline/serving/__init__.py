"""Pure serving logic: the recommender, model scoring, and load generation."""
