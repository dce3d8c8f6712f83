//! What each known global means: rebuild functions, storage classes, dtypes, containers,
//! numpy; and Python 2 to Python 3 name mapping.
