"""Hyperparameter profiles: TOML schema, validation, save/load, listing and export (torch-free)."""

from tuneassist.profiles.convert import profile_from_checklist, profile_from_runspec, profile_to_runspec
from tuneassist.profiles.export import EXTENSIONS, FORMATS, export_profile, onecycle_kwargs
from tuneassist.profiles.files import (
    ProfileEntry,
    find_profile,
    list_profiles,
    load_profile,
    save_profile,
    shipped_profiles_dir,
)
from tuneassist.profiles.schema import Profile, Provenance, dumps_toml
from tuneassist.profiles.validate import loads_profile, profile_from_dict

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "Profile",
    "ProfileEntry",
    "Provenance",
    "dumps_toml",
    "export_profile",
    "find_profile",
    "list_profiles",
    "load_profile",
    "loads_profile",
    "onecycle_kwargs",
    "profile_from_checklist",
    "profile_from_dict",
    "profile_from_runspec",
    "profile_to_runspec",
    "save_profile",
    "shipped_profiles_dir",
]
