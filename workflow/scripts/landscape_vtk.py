"""Every surface of one landscape as VTK XML for ParaView (rule landscape_vtk)."""

from normscape.pipeline.runtime import script_main
from normscape.reporting.export import write_landscape_vtk


def main(smk):
    write_landscape_vtk(smk.input.landscape, smk.output.plane, smk.output.pca, smk.output.trajectory)


script_main(snakemake, main)  # noqa: F821
