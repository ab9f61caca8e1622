"""Stage 4, deployment (the controller's side of the Ansible play): the record of the deployed student
(deployed) and the smoke check of a deployed router's answers (smoke)."""
