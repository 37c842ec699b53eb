"""The project builder: scientists make projects and workflows in the browser (task trees with a live
preview, subject uploads, settings, launch and pause); thin views over projects' services."""
