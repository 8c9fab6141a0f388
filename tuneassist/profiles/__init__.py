"""Hyperparameter profiles: TOML schema, validation, save/load, listing and export (torch-free)."""

from tuneassist.profiles.export import EXTENSIONS, FORMATS, export_profile, onecycle_kwargs
from tuneassist.profiles.schema import (
    Profile,
    ProfileEntry,
    Provenance,
    dumps_toml,
    find_profile,
    list_profiles,
    load_profile,
    loads_profile,
    profile_from_checklist,
    profile_from_dict,
    profile_from_runspec,
    profile_to_runspec,
    save_profile,
    shipped_profiles_dir,
)

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
