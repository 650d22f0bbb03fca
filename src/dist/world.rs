//! The MPI world as a [`Comm`] (the `mpi` feature, on the `mpi` crate over the system's MPI).

use super::Comm;
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

pub struct World {
    // Dropped last: finalizes MPI.
    world: SimpleCommunicator,
    scratch: Vec<f32>,
    scratch64: Vec<f64>,
    _universe: mpi::environment::Universe,
}

impl World {
    pub fn start() -> Result<World> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Usage("MPI could not be started (it was started before in this process)".into()))?;
        let world = universe.world();
        Ok(World { world, scratch: Vec::new(), scratch64: Vec::new(), _universe: universe })
    }
}

impl Comm for World {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn sum_f32(&mut self, buf: &mut [f32]) {
        self.scratch.resize(buf.len(), 0.0);
        self.world.all_reduce_into(&buf[..], &mut self.scratch[..], SystemOperation::sum());
        buf.copy_from_slice(&self.scratch);
    }
    fn sum_f64(&mut self, buf: &mut [f64]) {
        self.scratch64.resize(buf.len(), 0.0);
        self.world.all_reduce_into(&buf[..], &mut self.scratch64[..], SystemOperation::sum());
        buf.copy_from_slice(&self.scratch64);
    }
    fn gather_u32(&mut self, mine: &[u32]) -> Vec<u32> {
        let mut all = vec![0u32; mine.len() * self.size()];
        self.world.all_gather_into(mine, &mut all[..]);
        all
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
