//! TEMPORARY stub so the checkpointer branch compiles; the serde helper's module replaces it.
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::value::Value;

pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    let _ = value;
    todo!("serde bridge")
}

pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T> {
    let _ = value;
    todo!("serde bridge")
}
