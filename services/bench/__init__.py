"""`sluice bench`: measurements of Sluice's components (the engine first), written as JSON and a chart."""
