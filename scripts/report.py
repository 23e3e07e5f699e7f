"""Rule report: the HTML report."""
