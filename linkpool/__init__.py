"""linkpool: pre-provisioned Qualtrics personal survey links, claimed in one database statement."""
