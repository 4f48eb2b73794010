"""The mathematics: problems and their registry, the PINN, Taylor jets, probe directions, the estimators of the differential operators, step data."""
