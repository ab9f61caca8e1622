"""Stage 1, the teacher: its config and client (distill.teacher.client), labelling routes and style answers
(collect), paraphrasing seed prompts (expand), and turning the robot's decision logs into prompts (harvest)."""
