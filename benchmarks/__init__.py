"""Speed measurements: commands that print tables with ratios against peer tools."""
