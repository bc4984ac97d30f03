"""Files in and out: photographs, MRC stacks, STAR and cryoSPARC particle files, pairs and
estimates, checks and atomic output. The layer above geometry; it imports nothing else of the
package."""
