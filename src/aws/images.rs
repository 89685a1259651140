//! The repository's images through the ECR API (`DescribeImages`), most recently pushed first: where a push
//! looks for the previous build, whose layers the destination already holds. ECR's `tags/list` follows no
//! useful order and CI tags each build with its commit, so the previous build is found by when it was
//! pushed, not by its tag.

use super::Identity;
use crate::domain::repository::RepositoryAt;
use aws_sdk_ecr::types::{DescribeImagesFilter, TagStatus};

/// The most images read (pages of 100): a bounded look at a repository of any size.
const MOST: usize = 1000;

/// The tags of the repository's images, the most recently pushed image's first. Empty when the API cannot
/// tell (no `ecr:DescribeImages` permission, a registry that is not ECR): the registry's tag list is used
/// then.
pub async fn recent_tags(identity: &Identity, target: &RepositoryAt<'_>) -> Vec<String> {
    let ecr = identity.ecr(target.region);
    let filter = DescribeImagesFilter::builder().tag_status(TagStatus::Tagged).build();
    let mut pages = ecr
        .describe_images()
        .repository_name(target.repo)
        .set_registry_id(target.registry_id.map(String::from))
        .filter(filter)
        .max_results(100)
        .into_paginator()
        .send();
    let mut images = Vec::new();
    while images.len() < MOST {
        let Some(Ok(page)) = pages.next().await else {
            break;
        };
        for image in page.image_details() {
            let pushed = image.image_pushed_at().map(|t| (t.secs(), t.subsec_nanos()));
            images.push((pushed, image.image_tags().to_vec()));
        }
    }
    newest_first(images)
}

/// When an image was pushed (seconds, nanoseconds), where ECR says.
type Pushed = Option<(i64, u32)>;

/// The tags of `images` (each with when it was pushed), the newest image's first; an image whose push time
/// is unknown comes last.
fn newest_first(mut images: Vec<(Pushed, Vec<String>)>) -> Vec<String> {
    images.sort_by_key(|(pushed, _)| std::cmp::Reverse(*pushed));
    images.into_iter().flat_map(|(_, tags)| tags).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_images_tags_come_first_and_an_undated_image_last() {
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let images = vec![
            (Some((100, 0)), tags(&["a1b2c3"])),
            (None, tags(&["undated"])),
            (Some((300, 5)), tags(&["ffee01", "latest"])),
            (Some((300, 1)), tags(&["0000aa"])),
        ];
        assert_eq!(
            newest_first(images),
            tags(&["ffee01", "latest", "0000aa", "a1b2c3", "undated"])
        );
    }
}
