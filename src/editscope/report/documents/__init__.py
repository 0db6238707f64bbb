"""Write-ups and paper fills: the one placeholder engine and the filling of a Markdown template from a stored run."""
