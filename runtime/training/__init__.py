"""Training the MTP drafter on features of its target model."""
