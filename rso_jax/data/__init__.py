"""What an experiment reads: the task interface, its implementations and the text codec."""
