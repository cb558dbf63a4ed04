# gmptl's workflow lives in workflow/Snakefile (where the Snakemake workflow catalog and snakedeploy look);
# this file lets `snakemake` run from the repository root. Usage: see README.md.


include: "workflow/Snakefile"


# an included file's default target does not carry over to the file that includes it
workflow.default_target = "all"
