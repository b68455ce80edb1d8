//! Load generator and model-server simulator.

pub mod load;
pub mod sim;
