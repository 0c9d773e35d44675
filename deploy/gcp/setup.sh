#!/usr/bin/env bash
# One-time Google Cloud set-up for .github/workflows/release.yml: keyless publishing from
# GitHub Actions to Artifact Registry through Workload Identity Federation.
#
#   PROJECT_ID=my-project GITHUB_REPOSITORY=owner/registry GITHUB_OWNER_ID=123456 \
#     deploy/gcp/setup.sh            # DRY_RUN=1 prints the commands instead of running them
#
# GITHUB_OWNER_ID is the numeric id of the owning user or organisation (it survives renames,
# unlike the name): `gh api users/OWNER --jq .id` (or orgs/OWNER).
#
# What it makes:
#   - an Artifact Registry docker repository with immutable tags (a tag, once pushed, never moves);
#   - a workload identity pool and a GitHub OIDC provider that maps the token's claims to
#     attributes and admits only tokens from repositories of GITHUB_OWNER_ID;
#   - a service account that may write to that one repository only;
#   - the right for identities of GITHUB_REPOSITORY (no other repository) to act as it.
# No service-account key is created: the workflow trades its short-lived OIDC token for a
# short-lived access token. At the end it prints the repository variables the workflow reads.
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID}"
: "${GITHUB_REPOSITORY:?set GITHUB_REPOSITORY (owner/name)}"
: "${GITHUB_OWNER_ID:?set GITHUB_OWNER_ID (numeric id of the owner)}"
REGION=${REGION:-europe-west1}
REPOSITORY=${REPOSITORY:-containers}
POOL=${POOL:-github}
PROVIDER=${PROVIDER:-github-actions}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-registry-publisher}
DRY_RUN=${DRY_RUN:-0}
SA_EMAIL="${SERVICE_ACCOUNT}@${PROJECT_ID}.iam.gserviceaccount.com"

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [ "$DRY_RUN" != 1 ]; then "$@"; fi
}

if [ "$DRY_RUN" = 1 ]; then
  PROJECT_NUMBER=${PROJECT_NUMBER:-000000000000}
else
  PROJECT_NUMBER=$(gcloud projects describe "$PROJECT_ID" --format='value(projectNumber)')
fi
POOL_NAME="projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/${POOL}"

# APIs: Artifact Registry, IAM, the token exchange (STS) and short-lived credentials.
run gcloud services enable --project="$PROJECT_ID" \
  artifactregistry.googleapis.com iam.googleapis.com iamcredentials.googleapis.com \
  sts.googleapis.com

# The repository. Immutable tags: the release workflow tags by commit SHA and version only.
run gcloud artifacts repositories create "$REPOSITORY" --project="$PROJECT_ID" \
  --repository-format=docker --location="$REGION" --immutable-tags \
  --description="Container images of ${GITHUB_REPOSITORY}"

# The pool and the GitHub provider. The mapping keeps the claims that policies may test; the
# condition rejects every token whose repository does not belong to GITHUB_OWNER_ID.
run gcloud iam workload-identity-pools create "$POOL" --project="$PROJECT_ID" \
  --location=global --display-name="GitHub Actions"
run gcloud iam workload-identity-pools providers create-oidc "$PROVIDER" \
  --project="$PROJECT_ID" --location=global --workload-identity-pool="$POOL" \
  --display-name="GitHub Actions OIDC" \
  --issuer-uri="https://token.actions.githubusercontent.com" \
  --attribute-mapping="google.subject=assertion.sub,attribute.repository=assertion.repository,attribute.repository_owner_id=assertion.repository_owner_id,attribute.ref=assertion.ref,attribute.workflow_ref=assertion.workflow_ref" \
  --attribute-condition="assertion.repository_owner_id == '${GITHUB_OWNER_ID}'"

# The service account, allowed to write to this one repository (not project-wide).
run gcloud iam service-accounts create "$SERVICE_ACCOUNT" --project="$PROJECT_ID" \
  --display-name="Publishes ${GITHUB_REPOSITORY} images"
run gcloud artifacts repositories add-iam-policy-binding "$REPOSITORY" \
  --project="$PROJECT_ID" --location="$REGION" \
  --member="serviceAccount:${SA_EMAIL}" --role="roles/artifactregistry.writer"

# Only workflows of GITHUB_REPOSITORY may act as the service account.
run gcloud iam service-accounts add-iam-policy-binding "$SA_EMAIL" --project="$PROJECT_ID" \
  --role="roles/iam.workloadIdentityUser" \
  --member="principalSet://iam.googleapis.com/${POOL_NAME}/attribute.repository/${GITHUB_REPOSITORY}"

cat <<VARIABLES

Set these as repository variables (not secrets: none of them is a credential), e.g. with gh:
  gh variable set GCP_WORKLOAD_IDENTITY_PROVIDER --body "${POOL_NAME}/providers/${PROVIDER}"
  gh variable set GCP_SERVICE_ACCOUNT --body "${SA_EMAIL}"
  gh variable set GCP_REGION --body "${REGION}"
  gh variable set GCP_PROJECT --body "${PROJECT_ID}"
  gh variable set GAR_REPOSITORY --body "${REPOSITORY}"
VARIABLES
