//! Files written whole: through a temporary file beside the target, named with
//! [`xlt_provider::TEMP_PREFIX`] so that one a killed process left is recognised and swept
//! ([`xlt_provider::sweep_temp_files`], when [`crate::Experiment::open`] opens the
//! directory), then flushed and renamed, so that a reader never sees half a file.

use std::io::Write;
use std::path::Path;

use crate::StudyError;

fn io(path: &Path, e: impl std::fmt::Display) -> StudyError {
    StudyError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Writes `bytes` to `path` (creating its directory) through a `.xlt-tmp-*` file and a
/// rename; the file gets the umask's mode.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StudyError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let mut tmp = xlt_provider::tempfile_with_umask(parent).map_err(|e| io(path, e))?;
    tmp.write_all(bytes).map_err(|e| io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| io(path, e))?;
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    Ok(())
}
