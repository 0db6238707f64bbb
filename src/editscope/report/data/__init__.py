"""Reading a stored run: the results frame (one row per probe outcome) and StudyResults (cells, intervals, paired tests)."""
