//! Telling a world of one started on purpose from one started by the wrong launcher.
//!
//! A program linked against one MPI and started by another MPI's launcher (Open MPI's
//! `mpirun` starting an MPICH program, or the reverse) does not fail: each process finds no
//! launcher it knows, initialises as a world of one, and N copies of the job run side by
//! side, each rank 0, each writing the same checkpoints. Launchers announce the size of the
//! job in the environment; a world smaller than that is this mistake.

use ckpt::{Error, Result};

/// Environment variables by which launchers tell each process how many they started, and
/// who sets them.
const LAUNCHER_SIZES: [(&str, &str); 2] = [
    ("OMPI_COMM_WORLD_SIZE", "Open MPI's mpirun"),
    (
        "PMI_SIZE",
        "a PMI launcher (MPICH's or Intel MPI's mpiexec, Slurm's srun)",
    ),
];

/// Checks that MPI's world has as many processes as the launcher started (when a launcher
/// said so in `env`).
pub(crate) fn check_world_size(
    world_size: usize,
    env: impl Fn(&str) -> Option<String>,
) -> Result<()> {
    for (variable, launcher) in LAUNCHER_SIZES {
        let Some(value) = env(variable) else {
            continue;
        };
        let Ok(started) = value.trim().parse::<usize>() else {
            continue;
        };
        if started != world_size {
            return Err(Error::invalid(format!(
                "this process was started by {launcher} as one of {started} processes \
                 ({variable}={started}), but MPI sees a world of {world_size}: the program is \
                 linked against a different MPI than the launcher's (Open MPI and MPICH do not \
                 mix). Start it with the mpirun of the MPI it was built with (`ldd` on the \
                 program shows which), or rebuild it against the launcher's MPI"
            )));
        }
    }
    Ok(())
}

/// [`check_world_size`] with the process's environment.
pub(crate) fn check_world_size_from_env(world_size: usize) -> Result<()> {
    check_world_size(world_size, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_launcher_and_matching_launchers_pass() {
        assert!(check_world_size(1, env(&[])).is_ok());
        assert!(check_world_size(4, env(&[("OMPI_COMM_WORLD_SIZE", "4")])).is_ok());
        assert!(check_world_size(2, env(&[("PMI_SIZE", "2")])).is_ok());
        // Unparsable values are some other program's business.
        assert!(check_world_size(1, env(&[("PMI_SIZE", "many")])).is_ok());
    }

    #[test]
    fn a_foreign_launcher_is_named_in_the_error() {
        let e = check_world_size(1, env(&[("PMI_SIZE", "4")])).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("PMI_SIZE=4"), "{message}");
        assert!(message.contains("world of 1"), "{message}");
        let e = check_world_size(1, env(&[("OMPI_COMM_WORLD_SIZE", "3")])).unwrap_err();
        assert!(e.to_string().contains("Open MPI's mpirun"), "{e}");
    }
}
