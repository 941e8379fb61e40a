"""Expert policies trained online for the datasets diffrl makes: SAC, and the locomotion data recipe."""
