"""Utilities shared by every part of spcl: process groups, logging, seeding, atomic files."""
